"""What the bot knows: the library's facts and hours, the knowledge base and its retrieval."""
