"""Images given as http(s) URLs: fetched into memory with a total time limit and a size limit, never cached."""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from typing import Any

URL_SCHEMES = ("http://", "https://")
DEFAULT_TIMEOUT_S = 30.0  # the whole fetch, not each read: a server that drips bytes cannot hold a batch
DEFAULT_MAX_BYTES = 50 * 1024 * 1024  # far above any photo; a larger answer is not an image to classify
_CHUNK = 256 * 1024


class URLFetchError(OSError):
    """A URL that could not be fetched; the message is one line naming the reason (ImageError wraps it)."""


def is_url(source: Any) -> bool:
    """True for an ``http://`` or ``https://`` string."""
    return isinstance(source, str) and source[:8].lower().startswith(URL_SCHEMES)


def fetch_url(url: str, timeout: float = DEFAULT_TIMEOUT_S, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The body of ``url``, read into memory.

    Args:
        url: an http:// or https:// URL.
        timeout: seconds for the whole fetch (connect, headers and every byte), not per read.
        max_bytes: the largest answer accepted (by its Content-Length, or as it arrives).

    Returns:
        The bytes of the answer.

    Raises:
        URLFetchError: the fetch failed, the server answered non-2xx, the answer is larger than
            ``max_bytes`` or the fetch took longer than ``timeout`` (one line naming the reason).
    """
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"User-Agent": "vehicle-cls"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise URLFetchError(f"answer of {int(declared)} bytes exceeds the {max_bytes} byte limit")
            chunks, received = [], 0
            while True:
                if time.monotonic() > deadline:
                    raise URLFetchError(f"timed out after {timeout:g} s ({received} bytes received)")
                chunk = response.read1(_CHUNK)  # what has arrived: read(n) would wait for all n bytes
                if not chunk:
                    break
                received += len(chunk)
                if received > max_bytes:
                    raise URLFetchError(f"answer exceeds the {max_bytes} byte limit")
                chunks.append(chunk)
    except URLFetchError:
        raise
    except urllib.error.HTTPError as exc:
        raise URLFetchError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise URLFetchError(f"cannot fetch ({exc.reason})") from None
    except TimeoutError:
        raise URLFetchError(f"timed out after {timeout:g} s") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise URLFetchError(f"cannot fetch ({type(exc).__name__}: {exc})") from None
    return b"".join(chunks)
