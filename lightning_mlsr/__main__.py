import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["features"]:  # fill the image-feature cache (features_cli.py)
        from lightning_mlsr.training.cli.features import main as features_main

        features_main(sys.argv[2:])
    else:
        from lightning_mlsr.training.cli import main

        main()
