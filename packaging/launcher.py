"""The entry point of the built binary: the same as the ``mangaba-desktop`` command."""

import sys

from mangaba_desktop.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
