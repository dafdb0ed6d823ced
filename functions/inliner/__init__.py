"""The built-in inliner: a web page as one self-contained HTML file, no JavaScript run.

It fetches the page through the egress proxy (``fetch``), so redirects and
sub-resources obey the egress policy too; drops every script and rewrites
every reference (``rewrite``); and embeds stylesheets, images, fonts and
frames as ``data:`` URIs (``embed``).
"""

from functions.inliner.embed import MAX_FRAME_DEPTH, InlinedPage, inline

__all__ = ["MAX_FRAME_DEPTH", "InlinedPage", "inline"]
