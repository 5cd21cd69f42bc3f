"""Key custody: sealed keyring, barrier, KEK ring, unseal/rekey ceremonies, PKCS#11 backend, the KeyService protocol."""
