# src/ raft build fragment
