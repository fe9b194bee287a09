"""Graph search (later issue): probabilistic graph space, REINFORCE, Agent-REINFORCE."""
