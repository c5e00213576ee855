"""Commands: one module per user command. They use the layers below and never import each other."""
