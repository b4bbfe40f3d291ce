try:
    from nearid.cli.app import main
except KeyboardInterrupt:  # Ctrl-C while the command line itself is imported: the same one line as main()'s
    import sys

    print("nearid: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
