"""Classical baselines trained through RecBole's lower-level API (see recbole_models)."""
