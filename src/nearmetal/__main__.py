from nearmetal.cli import main

main()
