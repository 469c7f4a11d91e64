"""Evidence bundles for violations: frames, crops, facts, SHA-256 of every artifact, HMAC signature."""

from detect.evidence.builder import Bundle, BundleContext, EvidenceBuilder, EvidenceError, ModelInfo
from detect.evidence.config import EvidenceConfig, EvidenceKeyError, load_hmac_key
from detect.evidence.ring import FrameRing
from detect.evidence.signing import MANIFEST, SIGNATURE, VerifyReport, read_manifest, verify_bundle

__all__ = [
    "MANIFEST", "SIGNATURE", "Bundle", "BundleContext", "EvidenceBuilder", "EvidenceConfig", "EvidenceError",
    "EvidenceKeyError", "FrameRing", "ModelInfo", "VerifyReport", "load_hmac_key", "read_manifest", "verify_bundle",
]
