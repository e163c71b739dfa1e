"""Code that runs inside the Rasa server process: its SQL stores and a faster action-response check."""
