"""Hook implementations of this plugin (components are added as they are built)."""
