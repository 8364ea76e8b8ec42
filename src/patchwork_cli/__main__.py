from patchwork_cli.cli.app import main

main()
