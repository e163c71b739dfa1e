"""The staff console (next): librarians' web app for escalations, patrons, feedback, campaigns."""
