from fashion_retrieval.cli import main

main()
