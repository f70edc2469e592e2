from lightning_mlsr.training.cli import main

if __name__ == "__main__":
    main()
