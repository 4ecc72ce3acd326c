from obsmcp_test_echo import main

main()
