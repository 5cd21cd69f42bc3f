"""Wiring above the gate: what a running deployment composes at unseal (DESIGN, "the house")."""
