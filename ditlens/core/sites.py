"""One check for site names, so that every entry point answers an unknown site with the same message."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def check_site(site: str, known: Sequence[str], *, known_as: str = "Sites of this model") -> None:
    """Raise a ValueError naming `site` and listing `known` unless `site` is one of them.

    `known_as` names the list in the message: a stats table, say, knows only the sites it recorded.
    """
    if site not in known:
        raise ValueError(f"Unknown site {site!r}. {known_as}: {', '.join(known)}.")


def check_sites(sites: Iterable[str], known: Sequence[str], *, known_as: str = "Sites of this model") -> None:
    """`check_site` for each of `sites`; the first unknown one is the one reported."""
    for site in sites:
        check_site(site, known, known_as=known_as)
