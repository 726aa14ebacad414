# crdt/ extras: hlc, resolvers, models (crdt helper)
