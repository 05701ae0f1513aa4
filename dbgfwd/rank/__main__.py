from dbgfwd.rank import main

main()
