# gossip/ build fragment
