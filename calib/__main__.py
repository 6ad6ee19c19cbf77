from s2trt.calib.cli import main

raise SystemExit(main())
