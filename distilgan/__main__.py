from distilgan.cli import main

raise SystemExit(main())
