// The entry point bundled into noble.js (see README.md): exactly what the
// transfer pages use from the audited @noble libraries.
export { ed25519 } from '@noble/curves/ed25519.js';
export { sha256 } from '@noble/hashes/sha2.js';
export { hkdf } from '@noble/hashes/hkdf.js';
