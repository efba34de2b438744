"""Crowdsourced annotation: accounts, assignments and append-only label versions.

* :class:`AnnotationStore` (``store.py``) – the database (SQLite file by default,
  PostgreSQL via ``postgresql://`` URLs), versioned migrations, users with roles, hashed
  API tokens, argon2 passwords, sessions, login rate-limit state, image assignment to k
  annotators and append-only annotation versions;
* ``security.py`` – token/password hashing;
* consensus over the saved versions: :func:`fastsac.consensus.build_consensus`.
"""

from .store import ROLES, AnnotationStore, AnnotationVersion, User, default_database_path

__all__ = ["AnnotationStore", "AnnotationVersion", "User", "ROLES", "default_database_path"]
