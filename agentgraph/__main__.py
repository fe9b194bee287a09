from agentgraph._cli import main

raise SystemExit(main())
