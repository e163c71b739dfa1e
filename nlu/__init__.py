"""NLU for patronbot: training data per language (nlu/en, nlu/zh) and custom Rasa NLU components."""
