from obsmcp_test_broken import main

main()
