# setuptools refuses `cffi_modules` in pyproject.toml; this file passes it on, and makes
# the long description what a package index can show of README.md.
import re

from setuptools import setup
from setuptools.dist import Distribution

IMAGE = re.compile(r"^!\[[^\]]*\]\([^)]*\)\n\n(?:.+\n)+\n?", re.M)  # an image and its caption
RELATIVE_LINK = re.compile(r"\[([^\]]+)\]\((?![a-z]+:)([^)#\s]*)(#[^)\s]*)?\)")


def index_link(match):
    text, path = match.group(1), match.group(2)
    if text == path:
        return f"`{path}`"
    return text if path in text else f"{text} (`{path}`)"


def for_the_index(readme):
    """README.md without what breaks on an index page, which has no source tree beside
    it: the image and its caption go, and a relative link becomes its text and the path
    of the file (docs/ and examples/ are in the sdist)."""
    return RELATIVE_LINK.sub(index_link, IMAGE.sub("", readme))


class IndexReadme(Distribution):
    """pyproject.toml's readme, README.md, made fit for the index once it is read."""

    def parse_config_files(self, *args, **kwargs):
        super().parse_config_files(*args, **kwargs)
        if self.metadata.long_description:
            self.metadata.long_description = for_the_index(self.metadata.long_description)


setup(cffi_modules=["build_ext.py:ffibuilder"], distclass=IndexReadme)
