"""Rasa custom actions: thin adapters from rasa-sdk to the services in bot/."""
