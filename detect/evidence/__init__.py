"""Evidence bundles for violations: frames, crops, facts, SHA-256 of every artifact, HMAC and Ed25519 signatures."""

from detect.evidence.builder import Bundle, BundleContext, EvidenceBuilder, EvidenceError, ModelInfo, VerifierInfo
from detect.evidence.config import EvidenceConfig, EvidenceKeyError, load_hmac_key, load_previous_hmac_keys
from detect.evidence.keys import (PublishedKey, SigningKeys, check_key_files, load_public_keys, load_signing_key, load_signing_keys,
                                  public_key_id, published_keys)
from detect.evidence.ring import FrameRing
from detect.evidence.signing import MANIFEST, SIGNATURE, VerifyReport, hmac_key_for, read_manifest, signed_key_id, verify_bundle

__all__ = [
    "MANIFEST", "SIGNATURE", "Bundle", "BundleContext", "EvidenceBuilder", "EvidenceConfig", "EvidenceError",
    "EvidenceKeyError", "FrameRing", "ModelInfo", "PublishedKey", "SigningKeys", "VerifierInfo", "VerifyReport", "check_key_files", "hmac_key_for", "load_hmac_key",
    "load_previous_hmac_keys", "load_public_keys", "load_signing_key", "load_signing_keys", "public_key_id", "published_keys", "read_manifest", "signed_key_id",
    "verify_bundle",
]
