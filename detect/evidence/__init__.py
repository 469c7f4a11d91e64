"""Evidence bundles for violations: frames, crops, facts, SHA-256 of every artifact, HMAC and Ed25519 signatures.

Import from the module that holds what you need (`builder`, `config`, `keys`, `ring`, `signing`, `privacy`): the
package imports nothing itself, so that the settings (`config.EvidenceConfig`) and the evidence store, which every
command loads, do not load OpenCV and cryptography with the builder and the signing code. It holds the names of a
bundle's files alone, which all of them share.
"""

MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
FORMAT = "streetwatch-evidence/1"
