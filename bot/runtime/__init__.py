"""Running the bot: supervising its processes, training, the endpoints file, logs, the chat."""
