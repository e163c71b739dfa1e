"""The one path by which messages no Rasa turn produced (staff replies, campaigns) reach a patron."""
