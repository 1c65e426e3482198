"""Protocol adapters: one package per wire protocol, each a sans-I/O core beside a thin driver."""
