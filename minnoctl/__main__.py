from minnoctl.cli import main

main()
