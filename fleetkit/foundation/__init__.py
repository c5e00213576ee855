"""Foundation: settings, inventory, secrets, strict YAML, rendering, output, exit status."""
