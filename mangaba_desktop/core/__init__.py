"""The Qt-free core: storage, providers, chat turns and events."""
