"""Console report of a check run: `ok`, `FAIL` and `note` lines, and the failure count."""

from pathlib import Path


class Report:
    """Prints one line per finding and counts the failures; paths print relative to root."""

    def __init__(self, root):
        self.root = Path(root)
        self.failures = 0

    def ok(self, msg):
        print(f"  ok   {msg}")

    def fail(self, msg):
        self.failures += 1
        print(f"  FAIL {msg}")

    def note(self, msg):
        print(f"  note {msg}")

    def section(self, title):
        print(f"== {title}")

    def mark(self):
        """A point to ask `clean_since` about: a group of checks prints one `ok` if it added
        no failure."""
        return self.failures

    def clean_since(self, mark):
        return self.failures == mark

    def rel(self, path):
        try:
            return str(Path(path).resolve().relative_to(self.root))
        except ValueError:
            return str(path)
