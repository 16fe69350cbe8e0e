<?php

use Illuminate\Database\Migrations\Migration;
use Illuminate\Database\Schema\Blueprint;
use Illuminate\Support\Facades\Schema;

// What an application's later migration does to a counted column: widen it with ->change()
// (Doctrine DBAL computes the ALTER TABLE … ALTER COLUMN … TYPE). ue-resync must not block it.
class WidenCredits extends Migration
{
    public function up()
    {
        Schema::table('course_unit_elements', function (Blueprint $table) {
            $table->decimal('credits', 7, 2)->default(0)->change();
        });
        Schema::table('course_units', function (Blueprint $table) {
            $table->decimal('credits', 7, 2)->default(0)->change();
        });
    }

    public function down()
    {
        Schema::table('course_unit_elements', function (Blueprint $table) {
            $table->decimal('credits', 6, 2)->default(0)->change();
        });
        Schema::table('course_units', function (Blueprint $table) {
            $table->decimal('credits', 6, 2)->default(0)->change();
        });
    }
}
