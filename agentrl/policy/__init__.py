"""Policy backends behind one protocol."""
