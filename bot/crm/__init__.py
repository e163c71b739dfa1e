"""The CRM store: database, tables, migrations, patrons, conversations, consent and the audit log."""
