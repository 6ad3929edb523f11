"""Service-account key files for tests, registered with the Drive emulator.

``make_service_account(tmp_path, emu)`` writes a JSON key file shaped exactly like the one
Google Cloud's console downloads (IAM > Service accounts > Keys > Add key > JSON) and
registers its public key with the emulator, so google-auth's
``service_account.Credentials.from_service_account_file(path, scopes=..., subject=...)
.with_token_uri(emu.url + "/token")`` gets tokens from it.

RSA key generation takes a noticeable fraction of a second, so keys are made once per
process: key 0 is the default, others (``key_index=1``...) exist for tests that need a
key the emulator does not know.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from urllib.parse import quote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.drive_emulator import GOOGLE_TOKEN_URI, SCOPE_DRIVE, SCOPE_DRIVE_FILE, DriveEmulator

DEFAULT_SERVICE_ACCOUNT = "mover@proj.iam.gserviceaccount.com"
#: What `delegation=True` lets a Workspace admin grant: the scopes cloud_transfer may ask for.
DELEGATED_SCOPES = (SCOPE_DRIVE, SCOPE_DRIVE_FILE)


@functools.lru_cache(maxsize=None)
def _key_pems(key_index: int) -> tuple[str, str]:
    """(private key as PKCS#8 PEM, public key as SubjectPublicKeyInfo PEM); one RSA 2048
    key per index per process.  Google's key files hold PKCS#8 ("BEGIN PRIVATE KEY")."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode("ascii")
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")
    return private, public


def service_account_info(email: str = DEFAULT_SERVICE_ACCOUNT, key_index: int = 0) -> dict:
    """The key file's content, field for field and in the order Google writes them."""
    private, public = _key_pems(key_index)
    project = email.split("@", 1)[1].split(".", 1)[0]
    return {
        "type": "service_account",
        "project_id": project,
        # Google's private_key_id is 40 hex digits; here derived from the key, so stable per key.
        "private_key_id": hashlib.sha1(public.encode("ascii")).hexdigest(),
        "private_key": private,
        "client_email": email,
        # 21 digits, derived from the address exactly as the emulator derives it.
        "client_id": str(int(hashlib.sha256(email.encode()).hexdigest(), 16))[:21],
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": GOOGLE_TOKEN_URI,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{quote(email, safe='')}",
        "universe_domain": "googleapis.com",
    }


def make_service_account(tmp_path: Path, emu: DriveEmulator, email: str = DEFAULT_SERVICE_ACCOUNT,
                         delegation: bool | tuple[str, ...] | list[str] = False, *, key_index: int = 0,
                         register: bool = True) -> Path:
    """Write a service-account key file into `tmp_path` and return its path.

    `register`: tell the emulator the account and this key (off: a key file Google would
    not know, e.g. a deleted key).  `delegation`: domain-wide delegation granted, for
    DELEGATED_SCOPES (True) or the scopes given, so the account may act as a `subject`."""
    info = service_account_info(email, key_index)
    if register:
        emu.register_service_account(email, _key_pems(key_index)[1], client_id=info["client_id"],
                                     key_id=info["private_key_id"])
        if delegation:
            emu.allow_delegation(email, DELEGATED_SCOPES if delegation is True else delegation)
    path = Path(tmp_path) / f"{email.split('@')[0]}-{info['private_key_id'][:12]}.json"
    path.write_text(json.dumps(info, indent=2) + "\n")
    path.chmod(0o600)
    return path
