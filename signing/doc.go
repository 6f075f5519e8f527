// Package signing signs in-toto statements into Sigstore bundles with a
// stored key, and verifies such bundles against a fixed set of trusted
// public keys, offline.
//
// A [Signer] holds an ECDSA P-256 private key (PKCS#8 PEM on disk, see
// [GenerateKey] and [LoadSigner]). [Signer.SignStatement] wraps the statement
// in a DSSE envelope of type [PayloadType], signs the DSSE pre-authentication
// encoding, and returns the Sigstore bundle (media type
// application/vnd.dev.sigstore.bundle.v0.3+json) as JSON. Bundles carry no
// certificate, transparency log entry or timestamp: only a key hint, the
// [PublicKey.ID] of the signing key.
//
// A [Verifier] accepts a bundle only if it holds a DSSE envelope of type
// [PayloadType] with exactly one signature that verifies under one of its
// trusted keys. It fails closed: it cannot be built without keys, and every
// error from [Verifier.Verify] wraps [ErrVerification]. Verify does not look
// at transparency log entries or timestamps that a bundle may carry, and it
// does not check a key validity window: key rotation and revocation are the
// caller's job (pass only the keys trusted now). It does not check the
// statement's subject either: callers compare it with what they expect.
//
// Verify returns the DSSE payload exactly as signed. Bundle JSON produced by
// protojson is not byte-stable, so callers that hash bundles must hash the
// bytes as stored, never a re-serialisation; nothing in this package
// re-serialises a bundle it verifies.
package signing
