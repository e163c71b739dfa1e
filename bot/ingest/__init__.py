"""Ingestion: Rasa's events, from its SQL event broker or RabbitMQ, become CRM interactions, once."""
