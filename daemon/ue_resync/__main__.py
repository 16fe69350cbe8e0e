from ue_resync.cli import main

raise SystemExit(main())
