"""Scale-out inference (Ray Data). Import the submodule you need; nothing heavy is imported here."""
