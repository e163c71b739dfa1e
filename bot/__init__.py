"""patronbot's core, without Rasa imports: settings, the CRM and the services everything else uses."""
