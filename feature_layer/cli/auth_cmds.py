"""``feature-layer token hash`` / ``token new``: the SHA-256 a token is stored as in feature_layer.yml."""

from __future__ import annotations

import secrets
import sys

import click

from feature_layer.access import token_hash
from feature_layer.cli.base import handle_errors, main
from feature_layer.errors import InputError


@main.group()
def token() -> None:
    """Access tokens of the feature server (`auth:` in feature_layer.yml; docs/access_control.md)."""


@token.command("hash")
@handle_errors
def hash_token() -> None:
    """Print the SHA-256 of the token read from stdin (paste it as `sha256:` of a token)."""
    raw = sys.stdin.buffer.read().strip()
    if not raw:
        raise InputError("No token on stdin.", fix="pipe the token in: `printf %s \"$TOKEN\" | feature-layer token hash`.")
    if len(raw) < 16:
        raise InputError(f"The token has {len(raw)} characters; a guessable token protects nothing.",
                         fix="use at least 16 random characters, e.g. from `feature-layer token new`.")
    click.echo(token_hash(raw))


@token.command("new")
@click.option("--name", default="my-service", show_default=True, help="The token's name in feature_layer.yml.")
def new_token(name: str) -> None:
    """Generate a random token: prints it once (to stderr) and the YAML entry with its SHA-256 (stdout)."""
    value = secrets.token_urlsafe(32)
    click.echo(f"token (give it to the client, it is not stored): {value}", err=True)
    click.echo(f"- name: {name}\n  sha256: {token_hash(value)}\n  scopes: [registry:read]")
