"""What the messaging channels share: updates handled once, API tokens, and which channels are on."""
