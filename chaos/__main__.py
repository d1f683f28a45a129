from __future__ import annotations

from chaos.commands.cli import main

raise SystemExit(main())
