"""Small name and place lists for synthetic identifying data (all fictional combinations)."""

FEMALE = ("Olivia", "Emma", "Ava", "Sophia", "Isabella", "Mia", "Amelia", "Harper", "Evelyn", "Abigail",
          "Emily", "Elizabeth", "Sofia", "Avery", "Ella", "Scarlett", "Grace", "Chloe", "Maria", "Aaliyah",
          "Camila", "Luna", "Nora", "Lily", "Hannah", "Zoe", "Leah", "Priya", "Mei", "Fatima")
MALE = ("Liam", "Noah", "Oliver", "Elijah", "James", "William", "Benjamin", "Lucas", "Henry", "Theodore",
        "Jack", "Levi", "Alexander", "Jackson", "Mateo", "Daniel", "Michael", "Mason", "Sebastian", "Ethan",
        "Logan", "Owen", "Samuel", "Jacob", "Asher", "Aiden", "John", "Joseph", "Wyatt", "Hiroshi")
FAMILY = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
          "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
          "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez",
          "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen",
          "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell",
          "Carter", "Roberts", "Kim", "Patel", "Chen", "Okafor", "Haddad", "Kowalski", "Novak", "Silva")
STREETS = ("Oak St", "Maple Ave", "Cedar Ln", "Pine St", "Elm Dr", "Lakeview Rd", "Sunset Blvd", "Mission St",
           "Hillcrest Ave", "Park Pl", "Washington St", "Lincoln Ave", "Valencia St", "Harbor Way")
CITIES = (("Los Angeles", "CA", "900"), ("Pasadena", "CA", "911"), ("Long Beach", "CA", "908"),
          ("Santa Monica", "CA", "904"), ("Glendale", "CA", "912"), ("Irvine", "CA", "926"),
          ("San Diego", "CA", "921"), ("Burbank", "CA", "915"), ("Torrance", "CA", "905"),
          ("Anaheim", "CA", "928"))
