"""Model providers: every generation, local or remote, goes through ``litellm.acompletion``."""
