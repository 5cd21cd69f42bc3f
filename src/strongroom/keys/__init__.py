"""Key custody: sealed keyring, local agent, unseal/rekey ceremonies, PKCS#11 backend."""
