from slimtorch.compress.cli import main

main()
